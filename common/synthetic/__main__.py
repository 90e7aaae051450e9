"""``python -m common.synthetic``: write a synthetic dataset (see ``common.synthetic.world``)."""
from common.synthetic.world import main

raise SystemExit(main())
