//! Any bytes as an OVMF variable store, an EFI_SIGNATURE_LIST, an Authenticode PKCS#7
//! signature or a SubjectPublicKeyInfo.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nacre_measure::efivars;

fuzz_target!(|data: &[u8]| {
    let _ = efivars::SecureBootVars::from_ovmf_varstore(data);
    if let Ok(list) = efivars::parse_signature_lists("db", data) {
        let _ = efivars::find_db_authority(&list, &[data], &[0; 32]);
    }
    let _ = nacre_measure::pkcs7::parse_authenticode(data);
    let _ = nacre_measure::der::spki_parts(data);
});
