from codenn.cli import main

main()
