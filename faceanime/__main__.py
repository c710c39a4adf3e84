import sys

from faceanime.cli import main

sys.exit(main())
