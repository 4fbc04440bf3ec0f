import sys

from stack.serve.server import main

sys.exit(main())
