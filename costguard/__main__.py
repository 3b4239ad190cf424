from costguard.cli.main import main

main()
