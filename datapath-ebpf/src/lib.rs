//! Built for the host only as a build-dependency of `userspace`; the programs are
//! in `main.rs`, built for bpfel-unknown-none by `userspace/build.rs`.
#![no_std]
