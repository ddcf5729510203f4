#[allow(dead_code)]
mod qrs;

fn main() {}
