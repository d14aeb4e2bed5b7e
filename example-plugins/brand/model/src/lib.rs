//! The brand module's entities (Medusa's brand-module tutorial), shared by the brand steps.

use serde::{Deserialize, Serialize};

/// A brand as stored in the `brand` collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Brand {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

/// What a caller gives to create a brand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewBrand {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

/// A reference to one entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Id {
    pub id: String,
}

/// Items (products or collections) to create under a brand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrandItems {
    pub brand_id: String,
    pub items: Vec<NewItem>,
}

/// One product or collection to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewItem {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}

/// A product or collection as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub id: String,
    pub brand_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}
