//! nacre-measure: predict every boot measurement of a nacre image, publish them as signed
//! golden values, and verify nodes against them.

pub mod authenticode;
pub mod pe;
pub mod stub_cpio;
pub mod uki;
