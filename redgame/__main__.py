import sys

from redgame.cli import main

sys.exit(main())
