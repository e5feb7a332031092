from timesnet_gen.cli import main

raise SystemExit(main())
