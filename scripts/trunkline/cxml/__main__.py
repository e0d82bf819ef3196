"""``python -m trunkline.cxml serve|render ...`` (the same as ``trunkline cxml``)."""

import sys

from trunkline.cxml.cli import main

sys.exit(main())
