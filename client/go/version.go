package stpeter

// Version is the st-peter release this client belongs to: the VERSION file of the
// repository, the server's version and the wire contract's (scripts/check-version.sh).
const Version = "0.1.0"
