from labcloud.cli import main

main()
