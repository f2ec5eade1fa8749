from hyperwall.cli.app import main

main()
