"""``python -m bcfg2.info``: the same as the bcfg2-info command."""

import sys

from bcfg2.info import main

sys.exit(main())
