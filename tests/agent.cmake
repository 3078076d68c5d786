# agent tests
