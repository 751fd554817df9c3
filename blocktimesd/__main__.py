import sys

from blocktimesd.cli import main

sys.exit(main())
