print("AccountLedger: see issue #8")
