import sys

from gpucat.cli import main

sys.exit(main())
