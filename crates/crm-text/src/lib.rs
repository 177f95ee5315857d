//! Normalisation and similarity of the text that identifies a customer: e-mail, phone,
//! name and postcode, for matching one person across ERP, web and loyalty exports.
//!
//! Normalisers return a *matching key*, not a display value: two spellings of the same
//! thing give the same key, and `None` means "nothing usable here", never an error, so
//! one bad row does not stop a run. Similarity functions compare the strings they are
//! given; normalise first (`jaro_winkler(&normalize_name(a)?, &normalize_name(b)?)`).
//!
//! Every function tolerates the dirt that exports carry: surrounding and non-breaking
//! spaces, zero-width and other invisible characters, composed and decomposed accents.
//!
//! ```
//! use crm_text::{normalize_email, normalize_name, normalize_phone, jaro_winkler};
//!
//! assert_eq!(normalize_email(" Anna.Jensen+shop@GoogleMail.com "), Some("annajensen@gmail.com".into()));
//! assert_eq!(normalize_phone("0045-20123456", "DK"), Some("+4520123456".into()));
//! assert_eq!(normalize_name("Søren Østergaard"), normalize_name("Soeren Ostergaard"));
//! assert!(jaro_winkler("jensen", "jenssen") > 0.9);
//! ```

mod clean;
mod email;
mod name;
mod phone;
mod phonetic;
mod postcode;
mod similarity;

pub use email::{normalize_email, normalize_email_with, EmailOptions};
pub use name::normalize_name;
pub use phone::{normalize_phone, DEFAULT_COUNTRY};
pub use phonetic::double_metaphone;
pub use postcode::normalize_postcode;
pub use similarity::{damerau_levenshtein, jaro_winkler, levenshtein, token_set_similarity};
