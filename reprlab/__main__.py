import sys

from reprlab.cli import main

sys.exit(main())
