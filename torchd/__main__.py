import sys

from torchd.cli.main import main

sys.exit(main())
