"""ccsim's domain: money, ledgers and the parties of the Crypto Card, in pure Python."""
