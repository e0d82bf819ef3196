"""Trunkline's example voice agent for livekit-agents.

Two modes, chosen by TRUNKLINE_AGENT_MODE:

* ``offline`` (the lab and the tests; needs no cloud service): Silero VAD
  (its model ships in the wheel) listens to the caller; a greeting made with
  espeak-ng is played as soon as the caller is in the room; when the caller
  stops speaking the agent plays back what it heard (``echo``) or says a
  short reply (``say``). What it heard is recorded: frames, non-silent
  frames, speech segments and timestamps, in a JSON file per job under
  TRUNKLINE_AGENT_RECORD_DIR and in its own participant attributes
  (``trunkline.*``), where a test or ``trunkline probe`` can read them.
* ``pipeline`` (production): VAD -> STT -> LLM -> TTS with livekit-agents'
  AgentSession; each provider is a livekit-plugins package named by
  TRUNKLINE_AGENT_STT / _LLM / _TTS (API keys come from the environment file
  the role writes from vault).

Worker settings come from the environment the systemd unit gives it:
LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET, LIVEKIT_AGENT_NAME and
TRUNKLINE_AGENT_* (see the livekit_agents role's README section).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import time
import wave
from array import array
from pathlib import Path

from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobProcess, cli
from livekit.agents.vad import VADEventType

log = logging.getLogger("trunkline.agent")

SAMPLE_RATE = 48000
FRAME_MS = 20
# A frame whose RMS is above this (16-bit scale, about -50 dBFS) is "not silent".
SILENCE_RMS = float(os.environ.get("TRUNKLINE_AGENT_SILENCE_RMS", "100"))


def env(name: str, default: str = "") -> str:
    return os.environ.get(f"TRUNKLINE_AGENT_{name}", default)


def rms(frame: rtc.AudioFrame) -> float:
    samples = array("h", bytes(frame.data))
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def synthesize(text: str) -> list[rtc.AudioFrame]:
    """The text spoken by espeak-ng, as 20 ms frames at 48 kHz mono."""
    espeak = shutil.which("espeak-ng")
    if not espeak:
        raise RuntimeError("espeak-ng is not installed (the offline mode needs it)")
    wav_bytes = subprocess.run(
        [espeak, "--stdout", "-s", env("SPEECH_RATE", "165"), text],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = rtc.AudioResampler(rate, SAMPLE_RATE, num_channels=1)
    frames = resampler.push(bytearray(pcm)) + resampler.flush()
    return rechunk(frames)


def rechunk(frames: list[rtc.AudioFrame]) -> list[rtc.AudioFrame]:
    """Frames of exactly FRAME_MS at SAMPLE_RATE (the last one padded with silence)."""
    if frames and frames[0].sample_rate != SAMPLE_RATE:
        resampler = rtc.AudioResampler(frames[0].sample_rate, SAMPLE_RATE, num_channels=1)
        frames = [out for f in frames for out in resampler.push(f)] + resampler.flush()
    data = b"".join(bytes(f.data) for f in frames)
    rate = SAMPLE_RATE
    step = rate * FRAME_MS // 1000 * 2
    out = []
    for i in range(0, len(data), step):
        chunk = data[i : i + step].ljust(step, b"\0")
        out.append(rtc.AudioFrame(chunk, rate, 1, step // 2))
    return out


class Record:
    """What the agent heard and said in one job; a JSON file and attributes."""

    def __init__(self, ctx: JobContext) -> None:
        self.data = {
            "room": ctx.room.name,
            "job_id": ctx.job.id,
            "agent_name": ctx.job.agent_name,
            "job_received": time.time(),
            "frames_heard": 0,
            "nonsilent_frames": 0,
            "max_rms": 0.0,
            "speech": [],
            "replies": 0,
        }
        directory = env("RECORD_DIR")
        self.path = Path(directory) / f"{ctx.job.id}.json" if directory else None
        self.room = ctx.room

    def mark(self, key: str) -> None:
        self.data.setdefault(key, time.time())

    def frame(self, frame: rtc.AudioFrame) -> None:
        self.data["frames_heard"] += 1
        level = rms(frame)
        self.data["max_rms"] = max(self.data["max_rms"], round(level, 1))
        if level > SILENCE_RMS:
            self.data["nonsilent_frames"] += 1
            self.mark("first_nonsilent_heard")

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    async def publish(self) -> None:
        """The counters as participant attributes (read through the LiveKit API)."""
        keys = ("frames_heard", "nonsilent_frames", "replies", "max_rms")
        attrs = {f"trunkline.{k}": str(self.data[k]) for k in keys}
        for key in ("joined", "greeting_started", "first_nonsilent_heard"):
            if key in self.data:
                attrs[f"trunkline.{key}"] = f"{self.data[key]:.3f}"
        attrs["trunkline.speech_segments"] = str(len(self.data["speech"]))
        with contextlib.suppress(Exception):
            await self.room.local_participant.set_attributes(attrs)


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load(
        min_silence_duration=float(env("MIN_SILENCE", "0.5")),
    )
    if env("MODE", "offline") == "offline":
        proc.userdata["greeting"] = synthesize(
            env("GREETING", "Hello, you have reached Trunkline.")
        )
        if env("REPLY", "echo") == "say":
            proc.userdata["reply"] = synthesize(env("REPLY_TEXT", "I heard you."))


async def play(source: rtc.AudioSource, frames: list[rtc.AudioFrame]) -> None:
    for frame in frames:
        await source.capture_frame(frame)
    await source.wait_for_playout()


async def answered(ctx: JobContext, caller: rtc.RemoteParticipant) -> None:
    """Return once the phone call is up. An outbound call's SIP participant
    joins while it is still dialing or ringing (``sip.callStatus``); a greeting
    played then would be lost, as no audio reaches the far end before it answers.
    An inbound call (it came through a dispatch rule: ``sip.ruleID``) is up
    already: livekit-sip answers it once the agent listens."""
    if "sip.ruleID" in caller.attributes or caller.attributes.get("sip.callStatus", "active") in (
        "active",
        "automation",
        "",
    ):
        return
    up = asyncio.Event()

    def changed(_attrs: dict, p: rtc.Participant) -> None:
        if p.identity == caller.identity and p.attributes.get("sip.callStatus") in (
            "active",
            "hangup",
        ):
            up.set()

    ctx.room.on("participant_attributes_changed", changed)
    ctx.room.on(
        "participant_disconnected", lambda p: up.set() if p.identity == caller.identity else None
    )
    if caller.attributes.get("sip.callStatus") in ("active", "hangup"):
        return  # changed before the handler was in place
    await up.wait()


async def offline_session(ctx: JobContext, record: Record) -> None:
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
    track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, options)
    record.mark("published")

    caller = await ctx.wait_for_participant()
    record.data["caller"] = caller.identity
    record.data["caller_kind"] = int(caller.kind)
    record.mark("caller_present")
    await answered(ctx, caller)
    if caller.identity not in ctx.room.remote_participants:
        return  # the call never came up (no answer, busy, cancelled)
    record.mark("caller_answered")

    speaker: asyncio.Queue[list[rtc.AudioFrame]] = asyncio.Queue()

    async def speak() -> None:
        while True:
            frames = await speaker.get()
            try:
                await play(source, frames)
            except Exception:
                log.exception("playing %d frames failed", len(frames))

    async def listen() -> None:
        stream = rtc.AudioStream.from_participant(
            participant=caller,
            track_source=rtc.TrackSource.SOURCE_MICROPHONE,
            sample_rate=16000,
            num_channels=1,
        )
        vad = ctx.proc.userdata["vad"].stream()
        reply = ctx.proc.userdata.get("reply")

        async def on_vad() -> None:
            async for ev in vad:
                if ev.type == VADEventType.START_OF_SPEECH:
                    record.data["speech"].append({"start": time.time()})
                elif ev.type == VADEventType.END_OF_SPEECH:
                    if record.data["speech"]:
                        seg = record.data["speech"][-1]
                        seg.update(end=time.time(), duration=round(ev.speech_duration, 3))
                    record.data["replies"] += 1
                    speaker.put_nowait(reply or rechunk(ev.frames))
                    await record.publish()

        vad_task = asyncio.create_task(on_vad())
        try:
            async for ev in stream:
                record.frame(ev.frame)
                vad.push_frame(ev.frame)
        finally:
            vad.end_input()
            await vad_task

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            record.save()
            await record.publish()

    record.mark("greeting_started")
    speaker.put_nowait(ctx.proc.userdata["greeting"])
    tasks = [asyncio.create_task(t()) for t in (speak, listen, report)]
    gone = asyncio.Event()
    ctx.room.on(
        "participant_disconnected",
        lambda p: gone.set() if p.identity == caller.identity else None,
    )
    ctx.room.on("disconnected", lambda *_: gone.set())
    await gone.wait()
    record.mark("caller_left")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def plugin(kind: str):
    """livekit.plugins.<provider>.<KIND>(model=...) from TRUNKLINE_AGENT_<KIND>."""
    spec = env(kind)
    if not spec:
        raise RuntimeError(f"TRUNKLINE_AGENT_{kind} is not set (pipeline mode needs it)")
    provider, _sep, model = spec.partition(":")
    module = importlib.import_module(f"livekit.plugins.{provider}")
    factory = getattr(module, kind)
    return factory(model=model) if model else factory()


async def pipeline_session(ctx: JobContext) -> None:
    from livekit.agents import Agent, AgentSession

    session = AgentSession(
        vad=ctx.proc.userdata["vad"], stt=plugin("STT"), llm=plugin("LLM"), tts=plugin("TTS")
    )
    instructions = env("INSTRUCTIONS", "You are a helpful voice assistant on a phone line.")
    await session.start(room=ctx.room, agent=Agent(instructions=instructions))
    await session.generate_reply(instructions=env("GREETING", "Greet the caller."))


def job_count_load(server: AgentServer) -> float:
    """Load as the share of TRUNKLINE_AGENT_MAX_JOBS in use. The default (CPU over
    the last seconds) spikes while a burst of calls starts their processes; above
    the threshold livekit-server assigns the burst's jobs to nobody and does not
    retry, so those callers ring without an agent. A job count measured with
    scripts/bench/load_bench.py does not flap."""
    return len(server.active_jobs) / MAX_JOBS


MAX_JOBS = int(env("MAX_JOBS", "0"))

server = AgentServer(
    load_fnc=job_count_load if MAX_JOBS > 0 else None,
    setup_fnc=prewarm,
    host=env("HEALTH_HOST", "127.0.0.1"),
    port=int(env("HEALTH_PORT", "8081")),
    drain_timeout=int(env("DRAIN_TIMEOUT", "1800")),
    # With a job count, full means every job slot is taken.
    load_threshold=1.0 if MAX_JOBS > 0 else float(env("LOAD_THRESHOLD", "0.7")),
    num_idle_processes=int(env("IDLE_PROCESSES", "1")),
)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    if env("MODE", "offline") != "offline":
        await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        await pipeline_session(ctx)
        return
    record = Record(ctx)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    record.mark("joined")
    try:
        await offline_session(ctx, record)
    finally:
        record.mark("ended")
        record.save()
        # A phone call's room has no purpose once the caller hung up: close it
        # now (LiveKit would wait its departure timeout) and end the job.
        with contextlib.suppress(Exception):
            await ctx.delete_room()
        ctx.shutdown("caller left")


if __name__ == "__main__":
    cli.run_app(server)
