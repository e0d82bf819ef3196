"""``python -m trunkline.cxml serve|check|render ...`` (the same as ``trunkline cxml``)."""

import sys

from trunkline.cli.cxml import main

sys.exit(main())
