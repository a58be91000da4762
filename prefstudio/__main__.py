import sys

from prefstudio.cli import main

sys.exit(main())
