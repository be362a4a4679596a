import sys

from sat_frontends.primitivus.main import main

sys.exit(main())
