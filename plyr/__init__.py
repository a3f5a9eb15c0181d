"""The top of plyr: the `plyr` command and the list of services, the only place that imports
every package (core, below the services, cannot)."""
