import sys

from segda.cli import main

sys.exit(main())
