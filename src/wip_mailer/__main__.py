from wip_mailer.cli import main

main(prog_name="wip-mailer")
