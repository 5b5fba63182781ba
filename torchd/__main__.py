import sys

from torchd.cli import main

sys.exit(main())
