//! Tests of the policy engine against the documented AWS KMS key policy examples.

mod examples;
mod malformed;
mod props;
