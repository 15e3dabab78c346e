//! Build script: stamps the git commit into the binaries' `--version`, so
//! an operator can tell exactly which build a proxy runs; and checks the C
//! ABI against its header.
//!
//! The C ABI check: bindgen turns `include/anytun.h` into Rust declarations
//! (`$OUT_DIR/anytun_sys.rs`), whose structs and constants the exports in
//! `src/ffi/` use directly, so a struct's layout cannot differ from the
//! header's (bindgen's layout assertions check it against clang's). For the
//! functions it writes `$OUT_DIR/anytun_check.rs`, which assigns each
//! export to a function pointer of the header's type: a signature that
//! drifts, a function of the header without an export, or an export missing
//! from the header fails the build. bindgen needs libclang (`apt-get install
//! libclang-dev`).

use std::path::Path;
use std::process::Command;

const HEADER: &str = "include/anytun.h";
const FFI_DIR: &str = "src/ffi";

fn main() {
    stamp_commit();
    check_c_abi();
}

/// The trimmed output of a git command, if it succeeds.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn stamp_commit() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ANYTUN_COMMIT={commit}");
    // For tests/c_abi.rs, which compiles C with the `cc` crate at run time.
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=ANYTUN_BUILD_TARGET={target}");
    // Where HEAD and the branches live: `.git` in a checkout, elsewhere in
    // a worktree (whose `.git` is a file). A path that does not exist makes
    // cargo rerun this script, and rebuild the crate, on every build.
    for (arg, path) in [("--git-dir", "HEAD"), ("--git-common-dir", "refs/heads")] {
        if let Some(dir) = git(&["rev-parse", arg]) {
            println!("cargo:rerun-if-changed={dir}/{path}");
        }
    }
}

fn check_c_abi() {
    println!("cargo:rerun-if-changed={HEADER}");
    println!("cargo:rerun-if-changed={FFI_DIR}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header(HEADER)
        .allowlist_item("anytun_.*|ANYTUN_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        // Item comments would become rustdoc (and doctests); the header is
        // the documentation.
        .generate_comments(false)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen could not read {HEADER}: {e} \
                 (bindgen needs libclang: apt-get install libclang-dev)"
            )
        })
        .to_string();
    std::fs::write(out.join("anytun_sys.rs"), &bindings).expect("write anytun_sys.rs");
    let header_fns = functions(&bindings);
    let exports = exports(Path::new(FFI_DIR));
    let mut check = String::from(
        "/// Never called: type-checks every export against the header.\n\
         #[allow(unused_assignments, unused_variables, clippy::type_complexity)]\n\
         fn _exports_match_header() {\n",
    );
    for (name, arity) in &header_fns {
        let args = vec!["_"; *arity].join(", ");
        check.push_str(&format!(
            "    let mut f: unsafe extern \"C\" fn({args}) -> _ = sys::{name};\n    \
             f = {name};\n    let _ = f;\n"
        ));
    }
    check.push_str("}\n");
    for e in &exports {
        if !header_fns.iter().any(|(n, _)| n == e) {
            check.push_str(&format!(
                "compile_error!(\"export {e} is not declared in {HEADER}\");\n"
            ));
        }
    }
    std::fs::write(out.join("anytun_check.rs"), check).expect("write anytun_check.rs");
}

/// The functions bindgen declared, with their parameter counts.
fn functions(bindings: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut rest = bindings;
    while let Some(i) = rest.find("pub fn ") {
        rest = &rest[i + "pub fn ".len()..];
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_owned();
        let open = rest.find('(').expect("parameter list");
        // The list ends at the matching parenthesis; commas inside brackets
        // (function pointer types, generics) separate nothing here.
        let mut depth = 0i32;
        let mut params = vec![String::new()];
        let mut prev = ' ';
        for c in rest[open + 1..].chars() {
            let arrow = prev == '-' && c == '>';
            prev = c;
            match c {
                _ if arrow => {}
                ')' | '>' | ']' if depth == 0 => break,
                '(' | '<' | '[' => depth += 1,
                ')' | '>' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    params.push(String::new());
                    continue;
                }
                _ => {}
            }
            params.last_mut().expect("never empty").push(c);
        }
        let arity = params.iter().filter(|p| !p.trim().is_empty()).count();
        found.push((name, arity));
    }
    found
}

/// The names of the `#[no_mangle]` functions in the FFI sources.
fn exports(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.trim() != "#[no_mangle]" {
                continue;
            }
            for l in lines.by_ref() {
                if let Some(i) = l.find("extern \"C\" fn ") {
                    let s = &l[i + "extern \"C\" fn ".len()..];
                    let end = s.find('(').unwrap_or(s.len());
                    names.push(s[..end].trim().to_owned());
                    break;
                }
            }
        }
    }
    names
}
