# Convenience wrappers; tasks.py does the work and needs only Python 3.11+.
.PHONY: up test lint
up:
	python3 tasks.py up
test:
	python3 tasks.py test
lint:
	python3 tasks.py lint
