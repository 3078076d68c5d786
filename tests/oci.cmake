# oci tests
