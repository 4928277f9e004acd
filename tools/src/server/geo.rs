//! GeoJSON values of geo bins (particle 23) and the two geo questions the clients ask:
//! is a point within a region, does a region contain a point. A region is a Polygon (an
//! outer ring and holes), a MultiPolygon, or Aerospike's AeroCircle (a centre and a radius
//! in metres).
//!
//! The real server answers on the sphere (S2 cells, geodesic edges); this module answers
//! on the plane of longitude and latitude for polygons (a ray cast) and on the sphere for
//! circles (the haversine distance). The two agree away from the edges of regions a few
//! hundred kilometres wide; a point within metres of a long edge may be answered
//! differently. Pure and fuzzed (through the query decoder); a value that is not valid
//! GeoJSON is no shape, never a panic.

use serde_json::Value as Json;

/// Mean Earth radius in metres, as S2 takes it.
const EARTH_RADIUS_M: f64 = 6_371_010.0;

/// A ring: (longitude, latitude) vertices, the last equal to the first or not.
type Ring = Vec<(f64, f64)>;

#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Point(f64, f64),
    /// The outer ring, then holes.
    Polygon(Vec<Ring>),
    MultiPolygon(Vec<Vec<Ring>>),
    Circle {
        lng: f64,
        lat: f64,
        radius_m: f64,
    },
}

/// The JSON text of a stored geo particle: a flags byte, a big-endian cell count, the
/// cells (8 bytes each), then the text.
pub fn particle_json(particle: &[u8]) -> Option<&[u8]> {
    let cells = u16::from_be_bytes([*particle.get(1)?, *particle.get(2)?]) as usize;
    particle.get(3 + cells * 8..)
}

/// The shape of a geo value: a stored particle (flags, cells, text) or a bare text (an
/// expression's literal, a query's filter).
pub fn shape_of(bytes: &[u8]) -> Option<Shape> {
    parse(bytes).or_else(|| particle_json(bytes).and_then(parse))
}

/// The shape of a GeoJSON text, or None if it is not one this module knows.
pub fn parse(text: &[u8]) -> Option<Shape> {
    let json: Json = serde_json::from_slice(text).ok()?;
    let coordinates = json.get("coordinates")?;
    match json.get("type")?.as_str()? {
        "Point" => position(coordinates).map(|(lng, lat)| Shape::Point(lng, lat)),
        "Polygon" => polygon(coordinates).map(Shape::Polygon),
        "MultiPolygon" => {
            coordinates.as_array()?.iter().map(polygon).collect::<Option<Vec<_>>>().map(Shape::MultiPolygon)
        }
        "AeroCircle" => {
            let parts = coordinates.as_array()?;
            let (lng, lat) = position(parts.first()?)?;
            let radius_m = parts.get(1)?.as_f64().filter(|r| r.is_finite() && *r >= 0.0)?;
            Some(Shape::Circle { lng, lat, radius_m })
        }
        _ => None,
    }
}

fn position(json: &Json) -> Option<(f64, f64)> {
    let pair = json.as_array()?;
    let (lng, lat) = (pair.first()?.as_f64()?, pair.get(1)?.as_f64()?);
    ((-180.0..=180.0).contains(&lng) && (-90.0..=90.0).contains(&lat)).then_some((lng, lat))
}

fn polygon(json: &Json) -> Option<Vec<Ring>> {
    let rings = json
        .as_array()?
        .iter()
        .map(|ring| ring.as_array()?.iter().map(position).collect::<Option<Ring>>())
        .collect::<Option<Vec<Ring>>>()?;
    (!rings.is_empty() && rings.iter().all(|r| r.len() >= 3)).then_some(rings)
}

/// Whether region `region` contains the point (lng, lat); a point is no region.
pub fn contains(region: &Shape, lng: f64, lat: f64) -> bool {
    match region {
        Shape::Point(..) => false,
        Shape::Polygon(rings) => in_polygon(rings, lng, lat),
        Shape::MultiPolygon(polygons) => polygons.iter().any(|rings| in_polygon(rings, lng, lat)),
        Shape::Circle { lng: c_lng, lat: c_lat, radius_m } => {
            distance_m(*c_lng, *c_lat, lng, lat) <= *radius_m
        }
    }
}

/// The query's answer for a stored shape: a point query finds the regions that contain
/// it, a region query the points within it.
pub fn query_matches(query: &Shape, stored: &Shape) -> bool {
    match (query, stored) {
        (Shape::Point(lng, lat), region) => contains(region, *lng, *lat),
        (region, Shape::Point(lng, lat)) => contains(region, *lng, *lat),
        _ => false,
    }
}

fn in_polygon(rings: &[Ring], lng: f64, lat: f64) -> bool {
    match rings.split_first() {
        Some((outer, holes)) => in_ring(outer, lng, lat) && !holes.iter().any(|hole| in_ring(hole, lng, lat)),
        None => false,
    }
}

/// A ray cast towards increasing longitude: inside when it crosses the ring an odd number
/// of times.
fn in_ring(ring: &[(f64, f64)], lng: f64, lat: f64) -> bool {
    let mut inside = false;
    let mut previous = ring[ring.len() - 1];
    for &vertex in ring {
        let ((x1, y1), (x2, y2)) = (previous, vertex);
        if (y1 > lat) != (y2 > lat) && lng < x1 + (lat - y1) * (x2 - x1) / (y2 - y1) {
            inside = !inside;
        }
        previous = vertex;
    }
    inside
}

/// The great-circle distance in metres (haversine).
fn distance_m(lng1: f64, lat1: f64, lng2: f64, lat2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let (d_phi, d_lambda) = ((lat2 - lat1).to_radians(), (lng2 - lng1).to_radians());
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: &str = r#"{"type": "Polygon", "coordinates": [[[-122.5, 37.0], [-121.0, 37.0],
        [-121.0, 38.08], [-122.5, 38.08], [-122.5, 37.0]]]}"#;

    fn point(lng: f64, lat: f64) -> Shape {
        parse(format!(r#"{{"type": "Point", "coordinates": [{lng}, {lat}]}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn points_within_a_polygon_and_not_in_its_hole_or_outside() {
        let square = parse(SQUARE.as_bytes()).unwrap();
        assert!(query_matches(&square, &point(-122.0, 37.5)));
        assert!(query_matches(&square, &point(-121.5, 37.5)));
        assert!(!query_matches(&square, &point(-120.0, 37.5)));
        assert!(query_matches(&point(-122.0, 37.5), &square), "the region contains the point");
        let holed = parse(
            br#"{"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
                [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]]}"#,
        )
        .unwrap();
        assert!(contains(&holed, 2.0, 2.0) && !contains(&holed, 5.0, 5.0));
        let multi = parse(
            br#"{"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]],
            [[[5, 5], [6, 5], [6, 6], [5, 5]]]]}"#,
        )
        .unwrap();
        assert!(contains(&multi, 5.8, 5.2) && !contains(&multi, 3.0, 3.0));
    }

    #[test]
    fn an_aerocircle_holds_the_points_within_its_radius_on_the_sphere() {
        let circle = parse(br#"{ "type": "AeroCircle", "coordinates": [[-122.0, 37.5], 50000] }"#).unwrap();
        assert!(query_matches(&circle, &point(-122.0, 37.5)));
        assert!(query_matches(&circle, &point(-122.1, 37.5)), "about 8.8 km away");
        assert!(!query_matches(&circle, &point(-73.9, 40.7)), "New York is not within 50 km");
        // One degree of latitude is about 111.2 km.
        let wide = Shape::Circle { lng: 0.0, lat: 0.0, radius_m: 111_300.0 };
        assert!(contains(&wide, 0.0, 1.0) && !contains(&wide, 0.0, 1.01));
    }

    #[test]
    fn what_is_not_geojson_is_no_shape_and_stored_particles_give_their_text() {
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"type": "Point"}"#,
            br#"{"type": "Point", "coordinates": [500, 0]}"#,
            br#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}"#,
            br#"{"type": "LineString", "coordinates": []}"#,
            br#"{"type": "AeroCircle", "coordinates": [[0, 0], -1]}"#,
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let mut particle = vec![0, 0, 1];
        particle.extend_from_slice(&[9; 8]);
        particle.extend_from_slice(b"{}");
        assert_eq!(particle_json(&particle), Some(&b"{}"[..]));
        assert_eq!(particle_json(&[0, 0, 2, 1]), None);
        assert_eq!(particle_json(&[0]), None);
    }
}
