// @ts-check
// lorafleet web console: native ES modules, no build step, no framework; `tsc --noEmit` checks
// the JSDoc types (scripts/test). Served by the lorafleet binary from its embedded assets/.
//
// A page is a function registered here (see types.js for what it receives and returns):
//   route('/firmware', firmwarePage, { nav: 'Firmware' });
import { startTicker } from './clock.js';
import { campaignPage } from './pages/campaign.js';
import { editCampaignPage, newCampaignPage } from './pages/campaign_form.js';
import { campaignsPage } from './pages/campaigns.js';
import { devicePage } from './pages/device.js';
import { devicesPage } from './pages/devices.js';
import { firmwarePage } from './pages/firmware.js';
import { settingsPage } from './pages/settings.js';
import { route } from './router.js';
import { boot } from './shell.js';

route('/devices', devicesPage, { nav: 'Devices' });
route('/devices/:devEui', devicePage);
route('/firmware', firmwarePage, { nav: 'Firmware' });
route('/campaigns', campaignsPage, { nav: 'Campaigns' });
route('/campaigns/new', newCampaignPage);
route('/campaigns/:id', campaignPage);
route('/campaigns/:id/edit', editCampaignPage);
route('/settings', settingsPage, { nav: 'Settings' });

startTicker();
boot();
