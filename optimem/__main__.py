import sys

from optimem.cli import main

sys.exit(main())
