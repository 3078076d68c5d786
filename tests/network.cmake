# network tests
