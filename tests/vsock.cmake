# vsock tests
