//! `omnigate plugin new`: a new channel plugin in Rust, Python or JavaScript, on contract
//! 0.2.0, ready to build, with a test and recorded webhooks for `omnigate plugin test`.
//!
//! The templates are compiled into the binary (`host/templates/plugin/`). Python and
//! JavaScript plugins get the SDK and the WIT of the contract this binary speaks copied in
//! (`vendor/`, `wit/`): they build anywhere, with no path back to an omnigate checkout.
//! A Rust plugin depends on the `omnigate-sdk` crate: by path with `--sdk-path` (a
//! checkout's `sdk/` directory), else from the project's git repository.

use std::path::{Path, PathBuf};

use omnigate_signature::Scheme;

/// The value of the `webhook_secret` test secret in the fixtures and unit tests.
pub const TEST_WEBHOOK_SECRET: &str = "test-webhook-secret";

/// Where the Rust SDK comes from when `--sdk-path` is not given: the project's repository
/// (the workspace's `repository`).
const SDK_GIT: &str = env!("CARGO_PKG_REPOSITORY");

/// The world plugins are built against.
const WORLD: &str = "omnigate:channel/channel@0.2.0";

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A Rust crate (cargo, wasm32-wasip2).
    Rust,
    /// A Python package (componentize-py).
    Python,
    /// A JavaScript package (componentize-js).
    Js,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin id and package name.
    pub name: String,
    /// Its language.
    pub language: Language,
    /// The directory to create (must be absent or empty).
    pub dir: PathBuf,
    /// Rust only: the `sdk/` directory of an omnigate checkout to depend on by path.
    pub sdk_path: Option<PathBuf>,
}

/// Why a plugin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin id and package name.
    #[error(
        "`{0}` is not a valid plugin name: use lower-case letters, digits and single hyphens, \
         starting with a letter and ending with a letter or digit, at most 64 characters \
         (it becomes the plugin id and the package name)"
    )]
    BadName(String),
    /// The target directory has files in it.
    #[error("{0} exists and is not empty; choose another --dir or remove it")]
    NotEmpty(String),
    /// `--sdk-path` does not hold the Rust SDK, or was given for another language.
    #[error("--sdk-path {path}: {reason}")]
    SdkPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
}

/// A file of the new plugin: its path in the plugin directory and its contents.
type File = (String, String);

/// Create the plugin described by `options`; returns the files written (relative paths).
pub fn create(options: &Options) -> Result<Vec<String>, ScaffoldError> {
    check_name(&options.name)?;
    ensure_empty(&options.dir)?;
    let files = files(options)?;
    for (path, contents) in &files {
        let full = options.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| write_error(parent, source))?;
        }
        std::fs::write(&full, contents).map_err(|source| write_error(&full, source))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

fn write_error(path: &Path, source: std::io::Error) -> ScaffoldError {
    ScaffoldError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// A plugin name: `[a-z][a-z0-9-]*`, no `--`, no trailing `-`, at most 64 characters.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_owned()))
    }
}

fn ensure_empty(dir: &Path) -> Result<(), ScaffoldError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(ScaffoldError::NotEmpty(dir.display().to_string()))
            } else {
                Ok(())
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => {
            Err(ScaffoldError::NotEmpty(dir.display().to_string()))
        }
        Err(source) => Err(write_error(dir, source)),
    }
}

/// `acme-chat` → `AcmeChat`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The contract's WIT, as this binary was built with it.
const WIT: [(&str, &str); 4] = [
    (
        "channel.wit",
        include_str!("../../../wit/0.2.0/channel.wit"),
    ),
    ("host.wit", include_str!("../../../wit/0.2.0/host.wit")),
    ("types.wit", include_str!("../../../wit/0.2.0/types.wit")),
    (
        "destination.wit",
        include_str!("../../../wit/0.2.0/destination.wit"),
    ),
];

/// The Python SDK (`sdk/python/src/omnigate_sdk`).
const PYTHON_SDK: [(&str, &str); 10] = [
    (
        "__init__.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/__init__.py"),
    ),
    (
        "errors.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/errors.py"),
    ),
    (
        "fetch.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/fetch.py"),
    ),
    (
        "host.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/host.py"),
    ),
    (
        "http.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/http.py"),
    ),
    (
        "plugin.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/plugin.py"),
    ),
    (
        "referral.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/referral.py"),
    ),
    (
        "signature.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/signature.py"),
    ),
    (
        "testing.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/testing.py"),
    ),
    (
        "time.py",
        include_str!("../../../sdk/python/src/omnigate_sdk/time.py"),
    ),
];

const JS_SDK: &str = include_str!("../../../sdk/js/src/index.js");

/// Every file of the new plugin, placeholders filled in.
fn files(options: &Options) -> Result<Vec<File>, ScaffoldError> {
    let name = options.name.as_str();
    let mut files = match options.language {
        Language::Rust => rust_files(name, options.sdk_path.as_deref())?,
        Language::Python => {
            refuse_sdk_path(options)?;
            python_files(name)
        }
        Language::Js => {
            refuse_sdk_path(options)?;
            js_files(name)
        }
    };
    files.extend(fixture_files(name));
    files.push((".gitignore".into(), gitignore(options.language).into()));
    Ok(files)
}

fn refuse_sdk_path(options: &Options) -> Result<(), ScaffoldError> {
    match &options.sdk_path {
        Some(path) => Err(ScaffoldError::SdkPath {
            path: path.display().to_string(),
            reason: "only Rust plugins depend on the SDK by path; Python and JavaScript \
                     plugins get it copied into vendor/"
                .into(),
        }),
        None => Ok(()),
    }
}

fn gitignore(language: Language) -> &'static str {
    match language {
        Language::Rust => "target/\n",
        Language::Python => "*.wasm\n__pycache__/\n.venv/\nbuild/\n",
        Language::Js => "*.wasm\nnode_modules/\n",
    }
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("__NAME__", name)
        .replace("__TYPE__", &type_name(name))
        .replace("__WEBHOOK_SECRET__", TEST_WEBHOOK_SECRET)
}

fn rust_files(name: &str, sdk_path: Option<&Path>) -> Result<Vec<File>, ScaffoldError> {
    let dependency = match sdk_path {
        Some(path) => {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            if !path.join("Cargo.toml").is_file() || !path.join("src").join("lib.rs").is_file() {
                return Err(ScaffoldError::SdkPath {
                    path: path.display().to_string(),
                    reason: "not the Rust SDK crate (the `sdk` directory of an omnigate \
                             checkout, with Cargo.toml and src/lib.rs)"
                        .into(),
                });
            }
            // A TOML string: backslashes and quotes escaped.
            let quoted = toml::Value::String(path.display().to_string()).to_string();
            format!("omnigate-sdk = {{ path = {quoted} }}")
        }
        None => format!("omnigate-sdk = {{ git = \"{SDK_GIT}\" }}"),
    };
    let wasm = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    Ok(vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("../../templates/plugin/rust/Cargo.toml"), name)
                .replace("__SDK_DEPENDENCY__", &dependency),
        ),
        (
            "src/lib.rs".into(),
            fill(include_str!("../../templates/plugin/rust/src/lib.rs"), name),
        ),
        (
            "src/tests.rs".into(),
            fill(
                include_str!("../../templates/plugin/rust/src/tests.rs"),
                name,
            ),
        ),
        readme(
            name,
            "Rust",
            "src/lib.rs",
            "```sh\nrustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2\n```",
            "The unit tests run natively; the SDK's harness plays the host (src/tests.rs):\n\n```sh\ncargo test\n```",
            &wasm,
        ),
    ])
}

fn python_files(name: &str) -> Vec<File> {
    let wasm = format!("{name}.wasm");
    let build = format!(
        "With Python 3.11+ (componentize-py is pinned in requirements.txt):\n\n```sh\n\
         python3 -m venv .venv\n.venv/bin/pip install -r requirements.txt\n\
         .venv/bin/componentize-py -d wit -w {WORLD} componentize -p src -p vendor app -o {wasm}\n```\n\n\
         `vendor/omnigate_sdk` is the omnigate Python SDK and `wit/` the contract, copied by \
         `omnigate plugin new`."
    );
    let test = format!(
        "The unit tests run natively; the SDK's harness plays the host (tests/test_channel.py). \
         They import the contract's types, generated once:\n\n```sh\n\
         .venv/bin/componentize-py -d wit -w {WORLD} bindings build/bindings\n\
         PYTHONPATH=build/bindings:vendor:src .venv/bin/python -m unittest discover -s tests\n```"
    );
    let mut files = vec![
        (
            "src/app.py".into(),
            fill(
                include_str!("../../templates/plugin/python/src/app.py"),
                name,
            ),
        ),
        (
            "src/channel.py".into(),
            fill(
                include_str!("../../templates/plugin/python/src/channel.py"),
                name,
            ),
        ),
        (
            "tests/test_channel.py".into(),
            fill(
                include_str!("../../templates/plugin/python/tests/test_channel.py"),
                name,
            ),
        ),
        (
            "requirements.txt".into(),
            include_str!("../../templates/plugin/python/requirements.txt").into(),
        ),
        readme(name, "Python", "src/channel.py", &build, &test, &wasm),
    ];
    files.extend(
        PYTHON_SDK
            .iter()
            .map(|(file, text)| (format!("vendor/omnigate_sdk/{file}"), (*text).to_owned())),
    );
    files.extend(wit_files());
    files
}

fn js_files(name: &str) -> Vec<File> {
    let wasm = format!("{name}.wasm");
    let build = "With Node.js 20+ (componentize-js is pinned in package.json):\n\n```sh\n\
                 npm install\nnpm run build\n```\n\n`vendor/omnigate-sdk.js` is the omnigate \
                 JavaScript SDK and `wit/` the contract, copied by `omnigate plugin new`. The \
                 build disables WASI HTTP and the fetch event (`-d http -d fetch-event`): \
                 plugins reach the network only through the host's `httpFetch`."
        .to_owned();
    let mut files = vec![
        (
            "app.js".into(),
            fill(include_str!("../../templates/plugin/js/app.js"), name),
        ),
        (
            "package.json".into(),
            fill(include_str!("../../templates/plugin/js/package.json"), name),
        ),
        ("vendor/omnigate-sdk.js".into(), JS_SDK.to_owned()),
        readme(
            name,
            "JavaScript",
            "app.js",
            &build,
            "The recorded webhooks in `fixtures/` are the tests.",
            &wasm,
        ),
    ];
    files.extend(wit_files());
    files
}

fn wit_files() -> impl Iterator<Item = File> {
    WIT.iter()
        .map(|(file, text)| (format!("wit/{file}"), (*text).to_owned()))
}

fn readme(
    name: &str,
    language: &str,
    main_file: &str,
    build: &str,
    test: &str,
    wasm: &str,
) -> File {
    let text = fill(
        include_str!("../../templates/plugin/common/README.md"),
        name,
    )
    .replace("__LANGUAGE__", language)
    .replace("__MAIN_FILE__", main_file)
    .replace("__BUILD__", build)
    .replace("__TEST__", test)
    .replace("__WASM__", wasm);
    ("README.md".into(), text)
}

/// The recorded webhooks, the good one signed with [`TEST_WEBHOOK_SECRET`].
fn fixture_files(name: &str) -> Vec<File> {
    let body = include_str!("../../templates/plugin/common/message.json");
    let signature = omnigate_signature::sign(
        Scheme::HmacSha256Prefixed,
        TEST_WEBHOOK_SECRET.as_bytes(),
        body.as_bytes(),
    )
    .unwrap_or_default();
    vec![
        (
            "fixtures/channel.toml".into(),
            fill(
                include_str!("../../templates/plugin/common/channel.toml"),
                name,
            ),
        ),
        ("fixtures/message.json".into(), body.to_owned()),
        (
            "fixtures/message.toml".into(),
            fill(
                include_str!("../../templates/plugin/common/message.toml"),
                name,
            )
            .replace("__SIGNATURE__", &signature),
        ),
        (
            "fixtures/bad_signature.toml".into(),
            fill(
                include_str!("../../templates/plugin/common/bad_signature.toml"),
                name,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDERS: [&str; 10] = [
        "__TEST__",
        "__NAME__",
        "__TYPE__",
        "__WEBHOOK_SECRET__",
        "__SDK_DEPENDENCY__",
        "__SIGNATURE__",
        "__LANGUAGE__",
        "__MAIN_FILE__",
        "__BUILD__",
        "__WASM__",
    ];

    #[test]
    fn names_are_checked() {
        for good in ["acme", "acme-chat", "a1", "x-2-y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "1acme",
            "acme-",
            "ac--me",
            "acme_chat",
            "acme chat",
            "ácme",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("acme-chat-2"), "AcmeChat2");
    }

    #[test]
    fn every_language_gets_its_files_and_fixtures_and_no_placeholder_is_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        for language in [Language::Rust, Language::Python, Language::Js] {
            let options = Options {
                name: "acme-chat".into(),
                language,
                dir: dir.path().join(format!("{language:?}")),
                sdk_path: None,
            };
            let written = create(&options).expect("created");
            assert!(written.iter().any(|f| f == "fixtures/message.toml"));
            assert!(written.iter().any(|f| f == "README.md"));
            for file in &written {
                let text = std::fs::read_to_string(options.dir.join(file)).expect("read");
                for placeholder in PLACEHOLDERS {
                    assert!(!text.contains(placeholder), "{file}: {placeholder}");
                }
            }
            // A second time into the same directory: refused.
            assert!(matches!(create(&options), Err(ScaffoldError::NotEmpty(_))));
        }
    }

    #[test]
    fn sdk_path_must_hold_the_rust_sdk_and_is_for_rust_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = |language| Options {
            name: "acme".into(),
            language,
            dir: dir.path().join("p"),
            sdk_path: Some(dir.path().to_path_buf()),
        };
        assert!(matches!(
            create(&options(Language::Rust)),
            Err(ScaffoldError::SdkPath { .. })
        ));
        assert!(matches!(
            create(&options(Language::Python)),
            Err(ScaffoldError::SdkPath { .. })
        ));
    }
}
