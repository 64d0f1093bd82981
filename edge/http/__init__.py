"""The HTTP/1.1 edge. Read in order: server -> conn -> request -> route -> headers -> upstream -> splice."""
