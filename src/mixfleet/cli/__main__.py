from mixfleet.cli import main

raise SystemExit(main())
