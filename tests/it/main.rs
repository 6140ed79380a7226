//! Integration tests: the real `kms` binary, a real PKCS#11 token, the generated tonic client.

