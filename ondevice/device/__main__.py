"""`python -m ondevice.device BUNDLE_DIR --threads N`."""

import sys

from ondevice.device.runner import main

sys.exit(main())
