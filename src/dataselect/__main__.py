from dataselect.cli import main

main()
