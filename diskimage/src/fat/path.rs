//! Paths as UEFI spells them: `\EFI\BOOT\BOOTX64.EFI` or `/EFI/BOOT/BOOTX64.EFI`, matched
//! without regard to case.

/// Splits on `/` and `\`, dropping empty and `.` components and resolving `..` lexically
/// (never above the root).
pub fn components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `/A/B` for messages.
pub fn join(components: &[&str]) -> String {
    if components.is_empty() {
        return "/".to_string();
    }
    components.iter().fold(String::new(), |mut s, c| {
        s.push('/');
        s.push_str(c);
        s
    })
}

/// Case-insensitive comparison by Unicode upper case: covers ASCII exactly as UEFI's
/// collation does, and treats other letters the way Windows' upcase table mostly does.
pub fn names_equal(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_both_separators() {
        assert_eq!(
            components("\\EFI\\BOOT/BOOTX64.EFI"),
            ["EFI", "BOOT", "BOOTX64.EFI"]
        );
        assert_eq!(components("/a/./b/../c//"), ["a", "c"]);
        assert_eq!(components("/../.."), Vec::<&str>::new());
        assert_eq!(join(&["EFI", "BOOT"]), "/EFI/BOOT");
        assert!(names_equal("bootx64.efi", "BOOTX64.EFI"));
        assert!(names_equal("café", "CAFÉ"));
        assert!(!names_equal("a", "b"));
    }
}
