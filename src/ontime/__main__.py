from ontime.cli import main

raise SystemExit(main())
