//! The two-digit locality codes at the start of a domestic plate.
//!
//! Source: the list "Ký hiệu biển số xe ô tô – mô tô trong nước" in the
//! appendix of Circular 79/2024/TT-BCA, which carries over the list of
//! Circular 58/2020/TT-BCA unchanged (Đồng Nai 39 and 60, Hà Nội 29–33
//! and 40, TP. Hồ Chí Minh 41 and 50–59, 80 for vehicles registered by the
//! Traffic Police Department for central agencies and foreign missions).
//! Codes 13, 42, 44, 45, 46, 87, 91 and 96 are in no current list (13
//! belonged to the former Hà Bắc province) and codes below 11 are not
//! locality codes at all, so a read with one of them is a misread.
//!
//! Resolution 202/2025/QH15 merged the 63 provinces into 34 (the new
//! provincial governments run from 1 July 2025). Plates already issued keep
//! their codes, and the merged province keeps every code of the provinces
//! it absorbed, so only the names move: [`Province::name`] is the name
//! after the merger, [`Province::former_name`] the name the code was
//! issued under where that differs. Thừa Thiên Huế became the city of Huế
//! in January 2025, before the merger; it is recorded the same way.

use serde::Serialize;

/// The province or city a plate's locality code belongs to.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Province {
    pub code: u8,
    /// The name since the 2025 merger (34 provinces and cities).
    pub name: &'static str,
    /// The pre-merger name where the code was issued by a province that
    /// has since merged into another (or was renamed).
    pub former_name: Option<&'static str>,
}

/// The name [`province`] gives code 80, which belongs to no province.
pub const CENTRAL_AGENCIES: &str = "Cơ quan trung ương (Cục Cảnh sát giao thông)";

const HCM: &str = "TP. Hồ Chí Minh";

const fn p(code: u8, name: &'static str) -> Province {
    Province {
        code,
        name,
        former_name: None,
    }
}

const fn merged(code: u8, name: &'static str, former: &'static str) -> Province {
    Province {
        code,
        name,
        former_name: Some(former),
    }
}

/// Every code in use, in ascending order (the lookup relies on it).
static PROVINCES: [Province; 81] = [
    p(11, "Cao Bằng"),
    p(12, "Lạng Sơn"),
    p(14, "Quảng Ninh"),
    p(15, "Hải Phòng"),
    p(16, "Hải Phòng"),
    merged(17, "Hưng Yên", "Thái Bình"),
    merged(18, "Ninh Bình", "Nam Định"),
    p(19, "Phú Thọ"),
    p(20, "Thái Nguyên"),
    merged(21, "Lào Cai", "Yên Bái"),
    p(22, "Tuyên Quang"),
    merged(23, "Tuyên Quang", "Hà Giang"),
    p(24, "Lào Cai"),
    p(25, "Lai Châu"),
    p(26, "Sơn La"),
    p(27, "Điện Biên"),
    merged(28, "Phú Thọ", "Hòa Bình"),
    p(29, "Hà Nội"),
    p(30, "Hà Nội"),
    p(31, "Hà Nội"),
    p(32, "Hà Nội"),
    p(33, "Hà Nội"),
    merged(34, "Hải Phòng", "Hải Dương"),
    p(35, "Ninh Bình"),
    p(36, "Thanh Hóa"),
    p(37, "Nghệ An"),
    p(38, "Hà Tĩnh"),
    p(39, "Đồng Nai"),
    p(40, "Hà Nội"),
    p(41, HCM),
    p(43, "Đà Nẵng"),
    p(47, "Đắk Lắk"),
    merged(48, "Lâm Đồng", "Đắk Nông"),
    p(49, "Lâm Đồng"),
    p(50, HCM),
    p(51, HCM),
    p(52, HCM),
    p(53, HCM),
    p(54, HCM),
    p(55, HCM),
    p(56, HCM),
    p(57, HCM),
    p(58, HCM),
    p(59, HCM),
    p(60, "Đồng Nai"),
    merged(61, HCM, "Bình Dương"),
    merged(62, "Tây Ninh", "Long An"),
    merged(63, "Đồng Tháp", "Tiền Giang"),
    p(64, "Vĩnh Long"),
    p(65, "Cần Thơ"),
    p(66, "Đồng Tháp"),
    p(67, "An Giang"),
    merged(68, "An Giang", "Kiên Giang"),
    p(69, "Cà Mau"),
    p(70, "Tây Ninh"),
    merged(71, "Vĩnh Long", "Bến Tre"),
    merged(72, HCM, "Bà Rịa – Vũng Tàu"),
    merged(73, "Quảng Trị", "Quảng Bình"),
    p(74, "Quảng Trị"),
    merged(75, "Huế", "Thừa Thiên Huế"),
    p(76, "Quảng Ngãi"),
    merged(77, "Gia Lai", "Bình Định"),
    merged(78, "Đắk Lắk", "Phú Yên"),
    p(79, "Khánh Hòa"),
    p(80, CENTRAL_AGENCIES),
    p(81, "Gia Lai"),
    merged(82, "Quảng Ngãi", "Kon Tum"),
    merged(83, "Cần Thơ", "Sóc Trăng"),
    merged(84, "Vĩnh Long", "Trà Vinh"),
    merged(85, "Khánh Hòa", "Ninh Thuận"),
    merged(86, "Lâm Đồng", "Bình Thuận"),
    merged(88, "Phú Thọ", "Vĩnh Phúc"),
    p(89, "Hưng Yên"),
    merged(90, "Ninh Bình", "Hà Nam"),
    merged(92, "Đà Nẵng", "Quảng Nam"),
    merged(93, "Đồng Nai", "Bình Phước"),
    merged(94, "Cà Mau", "Bạc Liêu"),
    merged(95, "Cần Thơ", "Hậu Giang"),
    merged(97, "Thái Nguyên", "Bắc Kạn"),
    merged(98, "Bắc Ninh", "Bắc Giang"),
    p(99, "Bắc Ninh"),
];

/// The province a locality code belongs to; `None` for a code no
/// province uses (a misread, or a code that was never issued).
pub fn province(code: u8) -> Option<&'static Province> {
    PROVINCES
        .binary_search_by_key(&code, |p| p.code)
        .ok()
        .map(|i| &PROVINCES[i])
}

/// Every province entry, ascending by code.
pub fn all() -> &'static [Province] {
    &PROVINCES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(PROVINCES.windows(2).all(|w| w[0].code < w[1].code));
        assert!(PROVINCES.iter().all(|p| (11..=99).contains(&p.code)));
    }

    #[test]
    fn lookups() {
        for (code, name, former) in [
            (11, Some("Cao Bằng"), None),
            (15, Some("Hải Phòng"), None),
            (16, Some("Hải Phòng"), None),
            (29, Some("Hà Nội"), None),
            (33, Some("Hà Nội"), None),
            (40, Some("Hà Nội"), None),
            (41, Some(HCM), None),
            (50, Some(HCM), None),
            (59, Some(HCM), None),
            (61, Some(HCM), Some("Bình Dương")),
            (72, Some(HCM), Some("Bà Rịa – Vũng Tàu")),
            (43, Some("Đà Nẵng"), None),
            (92, Some("Đà Nẵng"), Some("Quảng Nam")),
            (65, Some("Cần Thơ"), None),
            (83, Some("Cần Thơ"), Some("Sóc Trăng")),
            (95, Some("Cần Thơ"), Some("Hậu Giang")),
            (23, Some("Tuyên Quang"), Some("Hà Giang")),
            (34, Some("Hải Phòng"), Some("Hải Dương")),
            (39, Some("Đồng Nai"), None),
            (75, Some("Huế"), Some("Thừa Thiên Huế")),
            (80, Some(CENTRAL_AGENCIES), None),
            (98, Some("Bắc Ninh"), Some("Bắc Giang")),
            (99, Some("Bắc Ninh"), None),
            (0, None, None),
            (10, None, None),
            (13, None, None),
            (42, None, None),
            (44, None, None),
            (45, None, None),
            (46, None, None),
            (87, None, None),
            (91, None, None),
            (96, None, None),
            (100, None, None),
            (255, None, None),
        ] {
            let got = province(code);
            assert_eq!(got.map(|p| p.name), name, "code {code}");
            assert_eq!(got.and_then(|p| p.former_name), former, "code {code}");
            if let Some(p) = got {
                assert_eq!(p.code, code);
            }
        }
    }

    #[test]
    fn every_code_from_11_to_99_except_the_unused_ones() {
        let unused = [13, 42, 44, 45, 46, 87, 91, 96];
        for code in 0..=255u8 {
            let expected = (11..=99).contains(&code) && !unused.contains(&code);
            assert_eq!(province(code).is_some(), expected, "code {code}");
        }
    }

    /// After the 2025 merger there are 34 provinces and cities; code 80
    /// is no province. Before it there were 63.
    #[test]
    fn the_merger_leaves_34_names_from_63() {
        let provinces = || PROVINCES.iter().filter(|p| p.code != 80);
        let now: BTreeSet<_> = provinces().map(|p| p.name).collect();
        assert_eq!(now.len(), 34, "{now:?}");
        let before: BTreeSet<_> = provinces()
            .map(|p| p.former_name.unwrap_or(p.name))
            .collect();
        assert_eq!(before.len(), 63, "{before:?}");
        // A former name is never also a current name of another code: a
        // province either survived under its name or merged away.
        for p in provinces() {
            if let Some(former) = p.former_name {
                assert!(!now.contains(former), "{former}");
            }
        }
    }
}
