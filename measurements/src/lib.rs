//! nacre-measure: predict every boot measurement of a nacre image, publish them as signed
//! golden values, and verify nodes against them.

pub mod authenticode;
pub mod der;
pub mod diff;
pub mod efivars;
pub mod manifest;
pub mod pcrsig;
pub mod pe;
pub mod pkcs7;
pub mod predict;
pub mod sign;
pub mod snp;
pub mod snp_id;
pub mod source;
pub mod stub_cpio;
pub mod tdx;
pub mod uki;
