"""Telephony as code: LiveKit SIP trunks and dispatch rules from one file."""
