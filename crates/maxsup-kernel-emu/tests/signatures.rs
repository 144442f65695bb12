//! The kernels' argument lists, checked without a GPU: a kernel's parameters cross two untyped
//! boundaries, cudarc's launch builder (the CUDA launchers of maxsup-ops) and `extern "C"` (this
//! crate's declarations of the emulated kernels), and neither compiler sees a mismatch. Read
//! from the sources as text:
//! - every declaration in `src/kernels.rs` has the parameter types of its kernel in ops.cu;
//! - every `launch_kernel!` in maxsup-ops' `src/cuda/` names a kernel of ops.cu and passes as
//!   many arguments as it takes, each `&mut` buffer into a writable pointer and every other
//!   argument into a read-only pointer or a value, and each scalar whose type the launcher's
//!   text states (`as i32`, `: u64`, `.elem_count()`, a parameter's type) in a parameter of
//!   that width and kind (an `int` is not given a `usize`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../maxsup-ops")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// `src` without its `//` comment lines.
fn without_comments(src: &str) -> String {
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Rust files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The text between the `(` at `open` and its matching `)`.
fn balanced(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, ch) in text[open..].char_indices() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after byte {open}")
}

/// Splits at the commas outside parentheses, brackets, braces and angle brackets.
fn top_level(list: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth) = (vec![], String::new(), 0i32);
    for ch in list.chars() {
        match ch {
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim().to_string());
    }
    parts
}

/// ops.cu with the files it includes by quoted name (`#include "attention.cuh"`) appended.
fn ops_cu_source() -> String {
    let dir = ops_dir().join("kernels");
    let mut src = read(&dir.join("ops.cu"));
    let included: Vec<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#include \""))
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect();
    assert!(!included.is_empty(), "ops.cu includes attention.cuh");
    for name in included {
        src.push('\n');
        src.push_str(&read(&dir.join(name)));
    }
    src
}

/// Kernel name -> parameter types, from the `extern "C" __global__` definitions of ops.cu and
/// the files it includes; the `INSTANTIATE` ones (`name_##S`) under both suffixes.
fn cuda_kernels() -> BTreeMap<String, Vec<String>> {
    let src = ops_cu_source();
    let mut kernels = BTreeMap::new();
    let marker = "extern \"C\" __global__ void ";
    let mut at = 0;
    while let Some(i) = src[at..].find(marker) {
        let start = at + i + marker.len();
        let open = start + src[start..].find('(').expect("a parameter list");
        let name = src[start..open].trim().to_string();
        let params: Vec<String> = top_level(balanced(&src, open))
            .iter()
            .map(|p| {
                // The type is everything but the parameter's name.
                let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
                let cut = p.rfind([' ', '*']).expect("a named parameter");
                p[..=cut].replace(" *", "*").trim().to_string()
            })
            .collect();
        match name.strip_suffix("_##S") {
            Some(base) => {
                kernels.insert(format!("{base}_f32"), params.clone());
                kernels.insert(format!("{base}_bf16"), params);
            }
            None => {
                kernels.insert(name, params);
            }
        }
        at = open;
    }
    assert!(
        kernels.len() > 40,
        "found only {} kernels in ops.cu",
        kernels.len()
    );
    kernels
}

/// The C type a Rust declaration's type stands for (`E` = the table's element type `T`).
fn c_type(rust: &str) -> String {
    let rust = rust.trim();
    let (prefix, base) = match (rust.strip_prefix("*const "), rust.strip_prefix("*mut ")) {
        (Some(b), _) => ("const ", b),
        (_, Some(b)) => ("", b),
        _ => ("", rust),
    };
    let base = match base {
        "E" => "T",
        "f32" => "float",
        "f64" => "double",
        "i32" => "int",
        "u32" => "uint32_t",
        "u8" => "uint8_t",
        "usize" => "size_t",
        other => other,
    };
    let pointer = if rust.starts_with('*') { "*" } else { "" };
    format!("{prefix}{base}{pointer}")
}

#[test]
fn emulator_declarations_match_the_kernels_in_ops_cu() {
    let kernels = cuda_kernels();
    let src = without_comments(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels.rs"),
    ));
    let mut checked = 0;
    // The typed table: `field(name_f32, name_bf16): (types);`.
    let table_at = src.find("kernel_tables! {").expect("the kernel table");
    let table_end = table_at + src[table_at..].find("\n}\n").expect("the table's end");
    let table = &src[table_at..table_end];
    for entry in table.split(';').filter(|e| e.contains("):")) {
        let head = entry.trim();
        let open = head.find('(').unwrap();
        let names = top_level(balanced(head, open));
        let types_at = head.find("):").unwrap() + 2;
        let types_open = types_at + head[types_at..].find('(').unwrap();
        let types: Vec<String> = top_level(balanced(head, types_open))
            .iter()
            .map(|t| c_type(t))
            .collect();
        for name in &names {
            let want = kernels
                .get(name)
                .unwrap_or_else(|| panic!("{name}: declared in kernels.rs, not defined in ops.cu"));
            assert_eq!(
                &types, want,
                "{name}: kernels.rs declares {types:?}, ops.cu takes {want:?}"
            );
            checked += 1;
        }
    }
    // The untyped kernels: `fn name(arg: Type, ...)` in the `extern "C"` blocks after it.
    let mut at = table_end;
    while let Some(i) = src[at..].find("extern \"C\" {") {
        let block_open = at + i + "extern \"C\" ".len();
        let block = balanced(&src, block_open);
        let mut b = 0;
        while let Some(j) = block[b..].find("fn ") {
            let start = b + j + 3;
            let open = start + block[start..].find('(').unwrap();
            let name = block[start..open].trim();
            let types: Vec<String> = top_level(balanced(block, open))
                .iter()
                .map(|p| c_type(p.split_once(':').expect("name: Type").1))
                .collect();
            let want = kernels
                .get(name)
                .unwrap_or_else(|| panic!("{name}: declared in kernels.rs, not defined in ops.cu"));
            assert_eq!(
                &types, want,
                "{name}: kernels.rs declares {types:?}, ops.cu takes {want:?}"
            );
            checked += 1;
            b = open;
        }
        at = block_open + block.len();
    }
    assert!(checked > 50, "checked only {checked} declarations");
}

/// The kernels a non-literal name in a launcher may stand for.
fn dynamic_names(file: &str, name_expr: &str, preceding: &str) -> Vec<String> {
    let src_dir = ops_dir().join("src");
    if name_expr == "name_for::<T>(base)" && file == "elementwise.rs" {
        // map1 / map2 callers pass the base name as a literal.
        let wanted = if preceding.contains("fn map2") {
            "map2(\""
        } else {
            "map1(\""
        };
        let mut names = vec![];
        for f in ["relu.rs", "gelu.rs"] {
            let s = read(&src_dir.join(f));
            for part in s.split(wanted).skip(1) {
                let base = &part[..part.find('"').unwrap()];
                names.push(format!("{base}_f32"));
                names.push(format!("{base}_bf16"));
            }
        }
        return names;
    }
    if name_expr == "name" && ["attention.rs", "attention_bwd.rs"].contains(&file) {
        // `kernel_name(head_dim)`'s pattern over the head dims the kernels are built for.
        let launcher = read(&src_dir.join("cuda").join(file));
        let body = &launcher[launcher.find("fn kernel_name").expect("fn kernel_name")..];
        let body = &body[body.find("format!(\"").unwrap() + "format!(\"".len()..];
        let pattern = &body[..body.find('"').unwrap()];
        let geometry = read(&src_dir.join("kernel_geometry.rs"));
        let dims = &geometry[geometry
            .find("FUSED_ATTENTION_HEAD_DIMS:")
            .expect("head dims")..];
        let dims = &dims[dims.find("= [").unwrap() + 3..dims.find("];").unwrap()];
        return dims
            .split(',')
            .map(|d| pattern.replace("{head_dim}", d.trim()))
            .collect();
    }
    if name_expr == "update.kernel()" {
        // The match arm around the launch, and `Update::kernel`'s name for it.
        let variant = preceding.rsplit("Update::").next().unwrap();
        let variant: String = variant
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        let table = read(&src_dir.join("multi_tensor/table.rs"));
        let arm = format!("Update::{variant} {{ .. }} => \"");
        let arm = if table.contains(&arm) {
            arm
        } else {
            format!("Update::{variant}(_) => \"")
        };
        let rest = &table[table
            .find(&arm)
            .unwrap_or_else(|| panic!("no kernel for Update::{variant}"))
            + arm.len()..];
        return vec![rest[..rest.find('"').unwrap()].to_string()];
    }
    panic!(
        "{file}: cannot resolve the kernel name {name_expr}; give it a literal or teach this test"
    )
}

#[test]
fn launchers_pass_each_kernel_its_arguments() {
    let kernels = cuda_kernels();
    let dir = ops_dir().join("src/cuda");
    let (mut checked, mut typed) = (0, 0);
    let fields = scalar_fields(&dir);
    for path in rust_files(&dir) {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let src = without_comments(&read(&path));
        let mut at = 0;
        while let Some(i) = src[at..].find("launch_kernel!(") {
            let open = at + i + "launch_kernel!".len();
            if src[..at + i].ends_with("macro_rules! ") {
                at = open;
                continue;
            }
            let args = top_level(balanced(&src, open));
            assert!(
                args.len() >= 3,
                "{file}: launch_kernel! without device, name and geometry"
            );
            let name_expr = args[1].as_str();
            let names = match (name_expr.find('"'), name_expr.starts_with("name_for")) {
                (Some(q), true) => {
                    let base = &name_expr[q + 1..name_expr.rfind('"').unwrap()];
                    vec![format!("{base}_f32"), format!("{base}_bf16")]
                }
                (Some(q), false) => {
                    vec![name_expr[q + 1..name_expr.rfind('"').unwrap()].to_string()]
                }
                (None, _) => dynamic_names(&file, name_expr, &src[..at + i]),
            };
            assert!(
                !names.is_empty(),
                "{file}: {name_expr} resolves to no kernel"
            );
            let passed = &args[3..];
            for name in &names {
                let params = kernels.get(name).unwrap_or_else(|| {
                    panic!("{file}: launches {name}, which ops.cu does not define")
                });
                assert_eq!(
                    passed.len(),
                    params.len(),
                    "{file}: {name} takes {params:?}, the launcher passes {passed:?}"
                );
                for (arg, param) in passed.iter().zip(params) {
                    let writable = param.ends_with('*') && !param.starts_with("const ");
                    let mutable = arg.starts_with("&mut ");
                    assert_eq!(
                        mutable, writable,
                        "{file}: {name}'s parameter `{param}` gets `{arg}` (outputs go as `&mut`, all else as `&`)"
                    );
                    if let Some(ty) = arg.strip_prefix('&').and_then(|v| match v.split_once('.') {
                        // A field, `sums.splits`: its declared type.
                        Some((_, field)) => fields.get(field).copied(),
                        None => binding_type(&src[..at + i], v),
                    }) {
                        let want = match param.as_str() {
                            "int" => "i32",
                            "size_t" => "usize",
                            "float" => "f32",
                            "double" => "f64",
                            // A pointer passed as its address (one that may be null).
                            p if p.ends_with('*') => "u64",
                            other => other,
                        };
                        assert_eq!(
                            ty, want,
                            "{file}: {name}'s parameter `{param}` gets `{arg}`, a {ty}"
                        );
                        typed += 1;
                    }
                }
                checked += 1;
            }
            at = open;
        }
    }
    assert!(checked > 60, "checked only {checked} launches");
    assert!(typed > 80, "typed only {typed} scalar arguments");
}

/// Field name -> scalar type of the `pub name: T,` fields declared under `dir` (a name declared
/// with two types is left out).
fn scalar_fields(dir: &Path) -> BTreeMap<String, &'static str> {
    let mut seen: BTreeMap<String, Option<&'static str>> = BTreeMap::new();
    for path in rust_files(dir) {
        for line in without_comments(&read(&path)).lines() {
            let Some(decl) = line.trim().strip_prefix("pub ") else {
                continue;
            };
            let Some((name, ty)) = decl.strip_suffix(',').and_then(|d| d.split_once(": ")) else {
                continue;
            };
            let Some(ty) = ["i32", "usize", "f32", "f64", "u64"]
                .into_iter()
                .find(|s| *s == ty.trim())
            else {
                continue;
            };
            let entry = seen.entry(name.trim().to_string()).or_insert(Some(ty));
            if *entry != Some(ty) {
                *entry = None;
            }
        }
    }
    seen.into_iter()
        .filter_map(|(n, t)| Some((n, t?)))
        .collect()
}

/// The type of `name`'s latest binding in `before` (the launcher's text up to the launch),
/// where the text states it: `let name: T`, `let name = ... as T;`, `let name = ...elem_count();`
/// (usize), or a parameter `name: T` of the enclosing function. `None` when not stated (a
/// buffer, or a value out of a destructured tuple).
fn binding_type(before: &str, name: &str) -> Option<&'static str> {
    let scalar = |t: &str| -> Option<&'static str> {
        ["i32", "usize", "f32", "f64", "u64"]
            .into_iter()
            .find(|s| *s == t.trim())
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    // Candidate binding sites, the last one before the launch wins (shadowing).
    let mut best: Option<(usize, Option<&'static str>)> = None;
    for pattern in [format!("let {name}"), format!("let mut {name}")] {
        let mut from = 0;
        while let Some(i) = before[from..].find(&pattern) {
            let at = from + i;
            let rest = &before[at + pattern.len()..];
            from = at + pattern.len();
            if rest.starts_with(is_ident) {
                continue; // a longer name
            }
            let stmt = &rest[..rest.find(';').unwrap_or(rest.len())];
            let ty = if let Some(annotated) = stmt.trim_start().strip_prefix(':') {
                scalar(annotated.split('=').next().unwrap_or(""))
            } else if let Some((_, cast)) = stmt.rsplit_once(" as ") {
                scalar(cast)
            } else if stmt.trim_end().ends_with(".elem_count()") {
                Some("usize")
            } else {
                None
            };
            if best.is_none_or(|(b, _)| at > b) {
                best = Some((at, ty));
            }
        }
    }
    // Destructuring `let (a, name, ..) = ...`: bound here, type not stated.
    let mut from = 0;
    while let Some(i) = before[from..].find("let (") {
        let at = from + i;
        from = at + 5;
        let pattern = &before[from..from + before[from..].find(')').unwrap_or(0)];
        let binds = pattern
            .split(|c: char| !is_ident(c))
            .any(|token| token == name);
        if binds && best.is_none_or(|(b, _)| at > b) {
            best = Some((at, None));
        }
    }
    // A parameter `name: T` of the enclosing function (after the last `fn`).
    let last_fn = before.rfind("fn ").unwrap_or(0);
    let sig = &before[last_fn..];
    let sig = &sig[..sig.find('{').unwrap_or(sig.len())];
    let param = format!("{name}: ");
    if let Some(p) = sig.find(&param) {
        if sig[..p].ends_with(|c: char| !is_ident(c)) && best.is_none_or(|(b, _)| last_fn + p > b) {
            let t = &sig[p + param.len()..];
            let t = &t[..t.find([',', ')']).unwrap_or(t.len())];
            best = Some((last_fn + p, scalar(t)));
        }
    }
    best.and_then(|(_, t)| t)
}
