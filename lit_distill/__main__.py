from lit_distill.main import main

main()
