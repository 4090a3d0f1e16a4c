"""``python -m appliance`` runs the command-line interface."""

import sys

from appliance.cli import main

sys.exit(main())
