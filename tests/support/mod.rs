//! Test support shared by the black-box tests: starting the real binary, and
//! (added by later tests) certificates and a fake Qlik Repository Service.
#![allow(dead_code)]

pub mod server;
