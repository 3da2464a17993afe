# Thin wrapper: dev.sh does the work (and the set-up) so a fresh machine needs no make.
.PHONY: demo test bench setup
demo test bench setup:
	./dev.sh $@
